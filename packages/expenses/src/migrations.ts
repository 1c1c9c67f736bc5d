import type { Migration } from '@mcp-auth-stack/database';
import {
  CATEGORIES,
  EXPENSE_COUNT_SLOTS,
  EXPENSE_LIMIT_SQLSTATE,
  MAX_AMOUNT,
  MAX_DESCRIPTION_LENGTH,
  MAX_EXPENSES_SETTING,
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
  {
    version: 3,
    name: 'expenses counted per user, with a limit',
    sql: `
      -- No expense may be added or removed while the existing ones are counted.
      LOCK TABLE expenses IN SHARE ROW EXCLUSIVE MODE;
      -- How many expenses each user holds, kept by the triggers below for every writer (the
      -- tools, an operator's SQL), so the limit reads a few rows instead of counting the user's.
      -- A user's count is the sum of ${EXPENSE_COUNT_SLOTS} rows, one per slot, and each database
      -- connection writes its own slot: with one row per user, the row's lock, held until the
      -- commit, made one user's adds commit one after another (2,000 a second at most here).
      -- A slot's count may go below 0 (a delete from another connection than the add's).
      CREATE TABLE expense_counts (
        user_id text NOT NULL,
        slot smallint NOT NULL,
        expenses bigint NOT NULL,
        PRIMARY KEY (user_id, slot)
      );
      INSERT INTO expense_counts (user_id, slot, expenses)
        SELECT user_id, 0, count(*) FROM expenses GROUP BY user_id;

      -- One statement trigger per change (a million rows inserted at once update each user's
      -- count once). The limit is the statement's own setting (${MAX_EXPENSES_SETTING}, which
      -- the repository sets for its inserts): SQL without it, an operator's, is counted and
      -- not limited, and so are deletes and updates. Checked after the count is updated: an add
      -- sees every add committed before its check and its own; adds in flight on the other
      -- slots (${EXPENSE_COUNT_SLOTS - 1} at most, one per slot) are the most by which racing
      -- adds can pass the limit. Each change names only its own transition tables (an INSERT
      -- has no removed rows), so each has its own statement.
      CREATE FUNCTION expenses_counted() RETURNS trigger LANGUAGE plpgsql AS $fn$
      DECLARE
        max_per_user bigint := nullif(current_setting('${MAX_EXPENSES_SETTING}', true), '')::bigint;
        own_slot smallint := pg_backend_pid() % ${EXPENSE_COUNT_SLOTS};
        users text[];
        over_limit text;
      BEGIN
        IF TG_OP = 'INSERT' THEN
          WITH counted AS (
            INSERT INTO expense_counts AS counts (user_id, slot, expenses)
              SELECT user_id, own_slot, count(*) FROM added_rows GROUP BY user_id
            ON CONFLICT (user_id, slot) DO UPDATE SET expenses = counts.expenses + excluded.expenses
            RETURNING counts.user_id
          )
          SELECT array_agg(user_id) INTO users FROM counted;
          IF max_per_user IS NULL OR users IS NULL THEN
            RETURN NULL;
          END IF;
          SELECT user_id INTO over_limit FROM expense_counts WHERE user_id = ANY (users)
            GROUP BY user_id HAVING sum(expenses) > max_per_user LIMIT 1;
          IF over_limit IS NOT NULL THEN
            RAISE EXCEPTION 'a user would hold more than % expenses', max_per_user
              USING ERRCODE = '${EXPENSE_LIMIT_SQLSTATE}';
          END IF;
        ELSIF TG_OP = 'DELETE' THEN
          INSERT INTO expense_counts AS counts (user_id, slot, expenses)
            SELECT user_id, own_slot, -count(*) FROM removed_rows GROUP BY user_id
          ON CONFLICT (user_id, slot) DO UPDATE SET expenses = counts.expenses + excluded.expenses;
        ELSIF TG_OP = 'UPDATE' THEN
          INSERT INTO expense_counts AS counts (user_id, slot, expenses)
            SELECT user_id, own_slot, sum(change)
            FROM (SELECT user_id, 1 AS change FROM added_rows
                  UNION ALL SELECT user_id, -1 FROM removed_rows) AS moved
            GROUP BY user_id HAVING sum(change) <> 0
          ON CONFLICT (user_id, slot) DO UPDATE SET expenses = counts.expenses + excluded.expenses;
        ELSE
          TRUNCATE expense_counts;
        END IF;
        RETURN NULL;
      END
      $fn$;
      CREATE TRIGGER expenses_counted_insert AFTER INSERT ON expenses
        REFERENCING NEW TABLE AS added_rows FOR EACH STATEMENT EXECUTE FUNCTION expenses_counted();
      CREATE TRIGGER expenses_counted_delete AFTER DELETE ON expenses
        REFERENCING OLD TABLE AS removed_rows FOR EACH STATEMENT EXECUTE FUNCTION expenses_counted();
      CREATE TRIGGER expenses_counted_update AFTER UPDATE ON expenses
        REFERENCING OLD TABLE AS removed_rows NEW TABLE AS added_rows
        FOR EACH STATEMENT EXECUTE FUNCTION expenses_counted();
      CREATE TRIGGER expenses_counted_truncate AFTER TRUNCATE ON expenses
        FOR EACH STATEMENT EXECUTE FUNCTION expenses_counted();
    `,
  },
];
