-- Alerts per type and severity.
SELECT alert_type, severity, count(*) AS alerts, round(avg(score), 1) AS avg_score
FROM alerts
GROUP BY alert_type, severity
ORDER BY alert_type, severity;
