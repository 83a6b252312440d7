"""Any systems on the same lists, one table: evaluate, significance, query dependence."""
