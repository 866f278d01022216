"""Reasoning synthesis: the thinking graph (concepts -> co-occurrence -> graph) and the chains written from it.

``python synthesize.py pipeline=reasoning`` runs :func:`ehrr1.artefacts.reasoning.synthesize_reasoning`,
which builds the instruction data it reads and calls :func:`ehrr1.reasoning.pipeline.synthesize_chains`.
"""
