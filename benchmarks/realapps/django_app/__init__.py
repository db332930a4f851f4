"""Django ORM + psycopg 3: TechEmpower's six tests (settings, models, views and URLs in this package)."""
