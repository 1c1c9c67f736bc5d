"""The Python reference for `pnpm bench`: the talk's Keycloak-mode expenses server, FastMCP.

Equivalent to this project's server in `keycloak` mode on the measured path: RS256 access
tokens verified against the realm's JWKS (issuer, audience = the server's /mcp URL), the user
is `sub`, the same `expenses` table and the same SQL through a pooled async driver (asyncpg),
results as structured content with an output schema plus text (as the TypeScript server
answers). REFERENCE_OUTPUT=text returns plain text without an output schema, as the talk's
server ships. Stateless HTTP with JSON responses: FastMCP's fastest settings.

Run by bench/run.ts: uvicorn server:app --workers N, with DATABASE_URL, KEYCLOAK_REALM_URL,
MCP_SERVER_BASE_URL in the environment.
"""

import contextlib
import os
from datetime import date as Date
from decimal import Decimal
from typing import Annotated, Literal

import asyncpg
from fastmcp import FastMCP
from fastmcp.server.auth import RemoteAuthProvider
from fastmcp.server.auth.providers.jwt import JWTVerifier
from fastmcp.server.dependencies import get_access_token
from pydantic import BaseModel, Field

REALM = os.environ["KEYCLOAK_REALM_URL"]
BASE_URL = os.environ["MCP_SERVER_BASE_URL"]
STRUCTURED = os.environ.get("REFERENCE_OUTPUT", "structured") != "text"

verifier = JWTVerifier(
    jwks_uri=f"{REALM}/protocol/openid-connect/certs",
    issuer=REALM,
    audience=f"{BASE_URL}/mcp",
    algorithm="RS256",
)
auth = RemoteAuthProvider(token_verifier=verifier, authorization_servers=[REALM], base_url=BASE_URL)

pool: asyncpg.Pool | None = None


@contextlib.asynccontextmanager
async def lifespan(_server):
    global pool
    pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=1, max_size=10)
    try:
        yield
    finally:
        await pool.close()


mcp = FastMCP("Expenses Tracker", auth=auth, lifespan=lifespan)

COLUMNS = """id::text AS id, to_char(date, 'YYYY-MM-DD') AS date, amount::text AS amount, category, description, payment_method,
  to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS created_at"""

Category = Literal["food", "transport", "entertainment", "shopping", "gadget", "other"]
PaymentMethod = Literal["amex", "visa", "cash"]


class Expense(BaseModel):
    id: str
    date: str
    amount: str
    category: str
    description: str
    payment_method: str
    created_at: str


class ExpenseList(BaseModel):
    expenses: list[Expense]


class Added(BaseModel):
    expense: Expense


def user_id() -> str:
    token = get_access_token()
    if token is None or not token.claims.get("sub"):
        raise PermissionError("no user")
    return token.claims["sub"]


async def list_expenses(limit: int) -> list[Expense]:
    assert pool is not None
    rows = await pool.fetch(
        f"""SELECT {COLUMNS} FROM expenses
            WHERE user_id = $1
              AND ($2::date IS NULL OR date >= $2::date)
              AND ($3::date IS NULL OR date <= $3::date)
              AND ($4::text IS NULL OR category = $4::text)
            ORDER BY expenses.date DESC, expenses.created_at DESC, expenses.id
            LIMIT $5""",
        user_id(), None, None, None, limit,
    )
    return [Expense(**dict(row)) for row in rows]


async def add_expense(date: Date, amount: Decimal, category: str, description: str, payment_method: str) -> Expense:
    assert pool is not None
    row = await pool.fetchrow(
        f"""INSERT INTO expenses (user_id, date, amount, category, description, payment_method)
            VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}""",
        user_id(), date, amount, category, description, payment_method,
    )
    return Expense(**dict(row))


Limit = Annotated[int, Field(ge=1, le=500, description="How many, newest first")]
Amount = Annotated[Decimal, Field(gt=0, le=Decimal("1000000000"), decimal_places=2)]
Description = Annotated[str, Field(min_length=1, max_length=500)]

if STRUCTURED:

    @mcp.tool(annotations={"readOnlyHint": True})
    async def get_user_expenses(limit: Limit = 50) -> ExpenseList:
        """The signed-in user's expenses, newest first."""
        return ExpenseList(expenses=await list_expenses(limit))

    @mcp.tool
    async def add_user_expense(
        date: Date, amount: Amount, category: Category, description: Description, payment_method: PaymentMethod
    ) -> Added:
        """Adds an expense for the signed-in user."""
        return Added(expense=await add_expense(date, amount, category, description, payment_method))

else:

    @mcp.tool(annotations={"readOnlyHint": True}, output_schema=None)
    async def get_user_expenses(limit: Limit = 50) -> str:
        """The signed-in user's expenses, newest first."""
        expenses = await list_expenses(limit)
        return "\n".join(
            f"{e.date}: {e.amount} {e.category} ({e.payment_method}) {e.description}" for e in expenses
        ) or "No expenses."

    @mcp.tool(output_schema=None)
    async def add_user_expense(
        date: Date, amount: Amount, category: Category, description: Description, payment_method: PaymentMethod
    ) -> str:
        """Adds an expense for the signed-in user."""
        e = await add_expense(date, amount, category, description, payment_method)
        return f"Added {e.amount} for {e.description} on {e.date}."


@mcp.custom_route("/health", methods=["GET"])
async def health(_request):
    from starlette.responses import JSONResponse

    return JSONResponse({"status": "ok"})


app = mcp.http_app(path="/mcp", stateless_http=True, json_response=True)
