-- A customer's days (the API's usage series, today against yesterday) are
-- read by customer, utility and a range of dates. The primary key leads with
-- the date, so without this index that read scanned every customer's rows of
-- the range: one per customer, utility and day.

CREATE INDEX daily_customer_usage_by_customer ON daily_customer_usage (customer_id, utility, usage_date);
