"""Dataset health checks: label errors, duplicates, outliers, balance; their job, page and API."""
