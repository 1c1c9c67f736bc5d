export { EXPENSES_NAMESPACE, expensesMigrations } from './migrations.ts';
export * from './model.ts';
export { DEFAULT_LIST_LIMIT, ExpenseRepository } from './repository.ts';
export { createExpensesServer, type ExpensesServerOptions } from './server.ts';
