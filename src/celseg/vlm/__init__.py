"""celseg.vlm"""
