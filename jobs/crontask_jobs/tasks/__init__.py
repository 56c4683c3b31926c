"""The three maintenance tasks, each an async function from an engine and options to a report."""
