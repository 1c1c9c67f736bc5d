import type { Migration } from '@mcp-auth-stack/database';
import {
  CATEGORIES,
  MAX_AMOUNT,
  MAX_DESCRIPTION_LENGTH,
  MAX_IDEMPOTENCY_KEY_LENGTH,
  PAYMENT_METHODS,
} from './model.ts';

const list = (values: readonly string[]) => values.map((value) => `'${value}'`).join(', ');

export const EXPENSES_NAMESPACE = 'expenses';

export const expensesMigrations: Migration[] = [
  {
    version: 1,
    name: 'create expenses',
    sql: `
      CREATE TABLE expenses (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        user_id text NOT NULL CHECK (char_length(user_id) BETWEEN 1 AND 255),
        date date NOT NULL,
        amount numeric(12, 2) NOT NULL CHECK (amount > 0 AND amount <= ${MAX_AMOUNT}),
        category text NOT NULL CHECK (category IN (${list(CATEGORIES)})),
        description text NOT NULL CHECK (char_length(description) BETWEEN 1 AND ${MAX_DESCRIPTION_LENGTH}),
        payment_method text NOT NULL CHECK (payment_method IN (${list(PAYMENT_METHODS)})),
        created_at timestamptz NOT NULL DEFAULT now()
      );
      -- Serves every query the tools make: one user's expenses, newest first, by date range.
      -- It holds the whole sort key, so "newest 10" stays an index range scan however many
      -- expenses share a date.
      CREATE INDEX expenses_user_date_idx ON expenses (user_id, date DESC, created_at DESC, id);
    `,
  },
  {
    version: 2,
    name: 'idempotency keys of add_user_expense',
    sql: `
      -- Kept on the expense itself, so the key and the write it guards commit together.
      ALTER TABLE expenses ADD COLUMN idempotency_key text
        CHECK (char_length(idempotency_key) BETWEEN 1 AND ${MAX_IDEMPOTENCY_KEY_LENGTH});
      CREATE UNIQUE INDEX expenses_user_idempotency_key_idx ON expenses (user_id, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    `,
  },
];
