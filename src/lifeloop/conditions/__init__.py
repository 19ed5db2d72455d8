"""The condition language: parser, real-time evaluator and SQL compiler."""
