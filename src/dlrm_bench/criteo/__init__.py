"""Criteo Terabyte data: schema, raw day reader, synthetic days, preprocessing, partition trace, packing."""
