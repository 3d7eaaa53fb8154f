"""Fleet reports: aggregation with pandas, run history and trends, and the HTML and Markdown views."""
