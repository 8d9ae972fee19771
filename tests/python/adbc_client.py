"""A new user's session through the ADBC Flight SQL driver (what notebooks and many BI tools use).

Usage: adbc_client.py URI USER PASSWORD
Prints one JSON object with what the driver saw; the Rust test (tests/tests/flight.rs) checks it.
"""

import json
import sys

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow.compute as pc

uri, user, password = sys.argv[1:4]
out = {}
with flight_sql.connect(uri, db_kwargs={"username": user, "password": password}) as conn:
    # Catalogs, schemas, tables and columns, as a database browser asks for them.
    objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
    tables = {}
    for catalog in objects:
        for schema in catalog["catalog_db_schemas"] or []:
            for table in schema["db_schema_tables"] or []:
                name = f'{catalog["catalog_name"]}.{schema["db_schema_name"]}.{table["table_name"]}'
                tables[name] = [c["column_name"] for c in table["table_columns"] or []]
    out["tables"] = tables
    out["table_types"] = conn.adbc_get_table_types()

    with conn.cursor() as cur:
        cur.execute("SELECT gender, count(*) AS n FROM patient GROUP BY gender ORDER BY gender")
        out["genders"] = [[g, n] for g, n in cur.fetchall()]

        # A query with bound parameters (prepared statement + DoPut).
        cur.execute("SELECT count(*) AS n FROM patient WHERE gender = ?", parameters=("female",))
        out["female"] = cur.fetchone()[0]

        # A 1-million-row result into Arrow.
        cur.execute("SELECT value FROM generate_series(1, 1000000)")
        result = cur.fetch_arrow_table()
        out["million_rows"] = result.num_rows
        out["million_sum"] = pc.sum(result.column("value")).as_py()

print(json.dumps(out))
