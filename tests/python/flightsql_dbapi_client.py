"""What Superset does through flightsql-dbapi's SQLAlchemy dialect: connect (which reads SqlInfo),
list schemas, tables and columns, run a query.

Usage: flightsql_dbapi_client.py HOST PORT USER PASSWORD
Prints one JSON object; the Rust test (tests/tests/flight.rs) checks it.
"""

import json
import sys

from sqlalchemy import create_engine, inspect, text

host, port, user, password = sys.argv[1:5]
engine = create_engine(f"datafusion://{user}:{password}@{host}:{port}?insecure=true")
out = {}
with engine.connect() as conn:
    inspector = inspect(conn)
    out["schemas"] = sorted(inspector.get_schema_names())
    out["tables"] = sorted(inspector.get_table_names(schema="public"))
    out["patient_columns"] = [c["name"] for c in inspector.get_columns("patient", schema="public")]
    rows = conn.execute(
        text("SELECT gender, count(*) AS n FROM patient GROUP BY gender ORDER BY gender")
    ).fetchall()
    out["genders"] = [[g, int(n)] for g, n in rows]
print(json.dumps(out))
