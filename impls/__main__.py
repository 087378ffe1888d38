"""``python -m impls``: the registered implementations as the README's Markdown table."""

from impls.registry import markdown_table

print(markdown_table())
