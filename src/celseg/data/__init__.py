"""celseg.data"""
