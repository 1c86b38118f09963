"""detcore plugin retinanet."""
