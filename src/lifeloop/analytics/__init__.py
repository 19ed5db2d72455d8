"""Analytics: customer-lifetime-value models and related metrics."""
