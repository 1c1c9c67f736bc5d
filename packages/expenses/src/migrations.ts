import type { Migration } from '@mcp-auth-stack/database';
import {
  CATEGORIES,
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
      -- tools, an operator's SQL): the limit reads one row instead of counting the user's.
      CREATE TABLE expense_counts (
        user_id text PRIMARY KEY,
        expenses bigint NOT NULL CHECK (expenses >= 0)
      );
      INSERT INTO expense_counts (user_id, expenses) SELECT user_id, count(*) FROM expenses GROUP BY user_id;

      -- One statement trigger per change (a million rows inserted at once update each user's
      -- count once). The limit is the statement's own setting (${MAX_EXPENSES_SETTING}, which
      -- the repository sets for its inserts): SQL without it, an operator's, is counted and
      -- not limited. Raised after the count is updated, so two adds at once are counted one
      -- after the other (the count's row lock) and the limit holds exactly.
      CREATE FUNCTION expenses_counted() RETURNS trigger LANGUAGE plpgsql AS $fn$
      DECLARE
        max_per_user bigint := nullif(current_setting('${MAX_EXPENSES_SETTING}', true), '')::bigint;
        users text[];
        changes bigint[];
        over_limit text;
      BEGIN
        IF TG_OP = 'TRUNCATE' THEN
          TRUNCATE expense_counts;
          RETURN NULL;
        END IF;
        -- Each change names only its own transition tables: an INSERT has no removed rows.
        IF TG_OP = 'INSERT' THEN
          SELECT array_agg(user_id), array_agg(change) INTO users, changes
            FROM (SELECT user_id, count(*) AS change FROM added_rows GROUP BY user_id) AS per_user;
        ELSIF TG_OP = 'DELETE' THEN
          SELECT array_agg(user_id), array_agg(change) INTO users, changes
            FROM (SELECT user_id, -count(*) AS change FROM removed_rows GROUP BY user_id) AS per_user;
        ELSE
          SELECT array_agg(user_id), array_agg(change) INTO users, changes
            FROM (SELECT user_id, sum(change)::bigint AS change
                  FROM (SELECT user_id, 1 AS change FROM added_rows
                        UNION ALL SELECT user_id, -1 FROM removed_rows) AS moved
                  GROUP BY user_id HAVING sum(change) <> 0) AS per_user;
        END IF;
        IF users IS NULL THEN
          RETURN NULL;
        END IF;
        -- A count never goes below 0, even when its row was lost (an operator's TRUNCATE of
        -- the counts alone): a delete must never fail for the count's sake.
        UPDATE expense_counts AS counts SET expenses = greatest(counts.expenses + per_user.change, 0)
          FROM unnest(users, changes) AS per_user (user_id, change)
          WHERE per_user.change < 0 AND counts.user_id = per_user.user_id;
        WITH counted AS (
          INSERT INTO expense_counts AS counts (user_id, expenses)
            SELECT user_id, change FROM unnest(users, changes) AS per_user (user_id, change) WHERE change > 0
          ON CONFLICT (user_id) DO UPDATE SET expenses = counts.expenses + excluded.expenses
          RETURNING counts.user_id, counts.expenses
        )
        SELECT user_id INTO over_limit FROM counted WHERE expenses > max_per_user LIMIT 1;
        IF over_limit IS NOT NULL THEN
          RAISE EXCEPTION 'a user would hold more than % expenses', max_per_user
            USING ERRCODE = '${EXPENSE_LIMIT_SQLSTATE}';
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
