"""celseg.viz"""
