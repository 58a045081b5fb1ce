-- The newest metric anomalies: each detection (the start of an incident) with the band it left.
SELECT event_time, series, value, round(expected, 2) AS expected, round(lower, 2) AS lower,
       round(upper, 2) AS upper, round(anomaly_score, 3) AS anomaly_score,
       CASE WHEN direction > 0 THEN 'above' ELSE 'below' END AS side
FROM metric_scores
WHERE is_anomaly
ORDER BY event_time DESC, series
LIMIT 50;
