"""Memory benchmark: synthetic worlds of stated facts and the probes that test recall of them."""
