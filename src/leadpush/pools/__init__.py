"""Lead pools (公海) per team: who may claim from which pool, and under which limits."""
