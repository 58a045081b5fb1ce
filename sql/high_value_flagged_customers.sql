-- Customers with high-value payments among their flagged ones: high value is at or above
-- the 95th percentile of every payment's amount in the lake (exact, interpolated).
WITH threshold AS (SELECT percentile(amount, 0.95) AS amount FROM transactions_enriched),
flagged AS (SELECT DISTINCT transaction_id FROM alerts WHERE transaction_id IS NOT NULL)
SELECT e.user_id, count(*) AS high_value_flagged, round(sum(e.amount), 2) AS amount_total,
       max(e.amount) AS largest, round(min(t.amount), 2) AS threshold
FROM transactions_enriched e
JOIN flagged f ON f.transaction_id = e.transaction_id
CROSS JOIN threshold t
WHERE e.amount >= t.amount
GROUP BY e.user_id
ORDER BY amount_total DESC, e.user_id;
