-- The strongest impossible-travel alerts, with the evidence.
SELECT event_time, card_last4, user_id, round(evidence['distance_m'] / 1000, 1) AS km,
       evidence['gap_s'] AS gap_s, round(evidence['implied_speed_mps']) AS implied_mps, severity, reason
FROM alerts
WHERE alert_type = 'impossible_travel'
ORDER BY score DESC
LIMIT 20;
