"""Distribution (routing) of new, released and recycled leads to people or pools."""
