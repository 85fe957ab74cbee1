"""Speed, memory and fault measurements: each script writes JSON and prints a table."""
