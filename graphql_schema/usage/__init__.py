"""Cost and usage: what a tenant's runs cost, summed for dashboards, and the budgets that bound it."""
