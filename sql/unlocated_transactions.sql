-- Transactions the join could not place: no fix from their device in range.
SELECT device_id, count(*) AS transactions, min(event_time) AS first_seen, max(event_time) AS last_seen
FROM transactions_enriched
WHERE NOT has_location
GROUP BY device_id
ORDER BY transactions DESC;
