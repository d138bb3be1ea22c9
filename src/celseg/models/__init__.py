"""celseg.models"""
