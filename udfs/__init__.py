"""Pure column functions and DataFrame transforms shared by the txwatch jobs."""
