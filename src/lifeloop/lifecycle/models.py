"""Tables of lifecycle models, current stages and stage history."""
