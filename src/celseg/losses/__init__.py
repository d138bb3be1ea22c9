"""celseg.losses"""
