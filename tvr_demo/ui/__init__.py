"""The Gradio app's pieces: the shared engines (`session`), thin callbacks over the engine, and media helpers."""
