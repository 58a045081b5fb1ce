-- Alerts per type per hour of event time.
SELECT date_trunc('HOUR', event_time) AS hour, alert_type, count(*) AS alerts
FROM alerts
GROUP BY date_trunc('HOUR', event_time), alert_type
ORDER BY hour, alert_type;
