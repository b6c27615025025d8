#!/usr/bin/env python3
"""The seed: the project's original frontend, rebuilt as a peer for the benchmark.

Source: the AWS sample "App Runner VPC Connector Example", demo_app/main.py of
https://github.com/adamjkeller/apprunner-vpc-connector-demo (March 2022).

Kept as it was wherever it decides performance: FastAPI with plain `def` handlers (Starlette runs
them on its thread pool), a NEW psycopg 3 connection for every request, autocommit off (so psycopg
sends BEGIN before the INSERT and the route commits), the same SQL, the same JSON answers, and
uvicorn without extras (h11 on asyncio), as the original's requirements had it.

Changed, and why:
- DB_PORT is read (the original always used 5432): the benchmark's PostgreSQL listens elsewhere.
- The timestamp and the user agent are bound parameters; the original pasted them into the SQL text
  (an SQL injection). One statement in one round trip either way.
- Connections are closed explicitly after /recent-visits too; the original left that to CPython
  freeing the connection when the handler returned, which closes it at the same moment.
- Credentials come from the environment only: the original read them from Secrets Manager when
  APPRUNNERSERVICE was set, a start-up step the benchmark does not measure.
- /test-connection (netcat) and /ecs-private-service are left out: the benchmark compares the
  database path. Errors are logged with the standard library instead of logbook.
- Listens on 127.0.0.1:$PORT instead of 0.0.0.0:8080, so the harness can pick a free port, at
  uvicorn's default log level (one access-log line per request; the original ran at debug).
"""

import logging
import os
from datetime import datetime

import psycopg
import uvicorn
from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from psycopg import sql

app = FastAPI(
    title="App Runner VPC Demo",
    description="Demo API that demonstrates a connection from an app runner service to a database residing in a vpc",
    version="1.0.0",
    debug=True,
)

TABLE_NAME = os.getenv("TABLE_NAME", "access")
INSERT_VISIT = sql.SQL("INSERT INTO {}(last_update, user_agent) VALUES (%s, %s)").format(
    sql.Identifier(TABLE_NAME)
)
RECENT_VISITS = sql.SQL("SELECT * FROM {} ORDER BY last_update DESC LIMIT 10").format(
    sql.Identifier(TABLE_NAME)
)

logger = logging.getLogger("seed")


@app.get("/health")
def health():
    return JSONResponse(status_code=status.HTTP_200_OK, content={"Status": "Healthy"})


def pg_client():
    return psycopg.connect(
        dbname=os.getenv("DB_NAME", "apprunnerdemo"),
        user=os.getenv("DB_USER"),
        password=os.getenv("DB_PASS"),
        host=os.getenv("DB_HOST"),
        port=os.getenv("DB_PORT", "5432"),
    )


def update_table(user_agent):
    conn = pg_client()
    try:
        conn.execute(INSERT_VISIT, (datetime.now(), user_agent))
        conn.commit()
    except Exception as e:
        # As in the original: a failed INSERT is logged and the visit still answered 200.
        logger.error(e)
    finally:
        conn.close()


@app.get("/recent-visits")
def recent_visits():
    conn = pg_client()
    latest_queries = []
    try:
        records = conn.execute(RECENT_VISITS)
        for record in records:
            latest_queries.append({"timestamp": str(record[0]), "user_agent": str(record[1])})
        return JSONResponse(status_code=status.HTTP_200_OK, content={"Response": latest_queries})
    except Exception as e:
        logger.error(e)
        return JSONResponse(
            status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
            content={"Response": "Error, unable to produce recent visits"},
        )
    finally:
        conn.close()


@app.get("/")
def root(request: Request):
    user_agent = request.headers.get("user-agent")
    update_table(user_agent)
    return JSONResponse(status_code=status.HTTP_200_OK, content={"Response": "Registered request"})


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    uvicorn.run(app, host="127.0.0.1", port=int(os.getenv("PORT", "8080")))
