"""Message templates in Liquid: per-locale variants, preview, safe rendering."""
