-- Flagged transactions of the last hour: every payment with at least one alert, newest
-- first, with its alert types. The hour ends at the newest payment in the lake (on a live
-- lake that is about now; on a replayed or simulated one, the end of its data).
WITH newest AS (SELECT max(event_time) AS at FROM transactions_enriched)
SELECT e.event_time, e.transaction_id, e.user_id, e.card_last4, e.merchant, e.amount,
       e.currency, array_join(array_sort(collect_set(a.alert_type)), ', ') AS alert_types,
       count(*) AS alerts
FROM transactions_enriched e
JOIN alerts a ON a.transaction_id = e.transaction_id
CROSS JOIN newest n
WHERE e.event_time > n.at - INTERVAL 1 HOUR
GROUP BY e.event_time, e.transaction_id, e.user_id, e.card_last4, e.merchant, e.amount, e.currency
ORDER BY e.event_time DESC, e.transaction_id;
