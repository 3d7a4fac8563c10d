"""Pure: from what was observed of a QuantizedModel and its children, the status and actions."""
