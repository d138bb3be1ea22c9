"""``celseg serve``: a local web page that segments an uploaded image with the user's class names.

``handler`` holds the request handling as plain functions (testable without a browser or a
server); ``app`` lays the Gradio page out around them.
"""
