-- Merchants with the highest share of flagged payments, among those with at least
-- min_payments payments (change the default here, or SET VAR min_payments = 50 first).
DECLARE OR REPLACE VARIABLE min_payments INT DEFAULT 20;
WITH flagged AS (SELECT DISTINCT transaction_id FROM alerts WHERE transaction_id IS NOT NULL)
SELECT e.merchant, count(*) AS payments, count(f.transaction_id) AS flagged,
       round(count(f.transaction_id) / count(*), 4) AS alert_rate
FROM transactions_enriched e
LEFT JOIN flagged f ON f.transaction_id = e.transaction_id
GROUP BY e.merchant
HAVING count(*) >= min_payments
ORDER BY alert_rate DESC, flagged DESC, e.merchant
LIMIT 20;
