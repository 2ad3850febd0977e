"""One module per command: each turns parsed arguments into calls of the package's public functions and an
exit status (0 done, 1 failed, 2 refused input, 3 a run stopped because it cannot learn)."""
