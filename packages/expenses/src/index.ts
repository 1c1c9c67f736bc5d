export {
  createExpensesServer,
  describeExpenseList,
  EXPENSE_ADMIN_ROLE,
  EXPENSE_METHOD_SCOPES,
  EXPENSE_SCOPES,
  EXPENSE_TOOL_SCOPES,
  EXPENSE_USER_SCOPES,
  type ExpensesServerOptions,
  holds,
  STORAGE_BUSY_MESSAGE,
  STORAGE_ERROR_MESSAGE,
  STORAGE_FAILURE_MESSAGE,
  STORAGE_FULL_MESSAGE,
} from './mcp-server.ts';
export { EXPENSES_NAMESPACE, expensesMigrations } from './migrations.ts';
export * from './model.ts';
export {
  DEFAULT_LIST_LIMIT,
  ExpenseLimitError,
  ExpenseRepository,
  type ExpenseRepositoryOptions,
  InvalidCursorError,
} from './repository.ts';
