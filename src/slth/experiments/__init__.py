"""Evidence experiments: each ``slth experiment <name>`` writes one JSON record that ``slth report`` renders.

=====================  ==========================================================================
width-curves           Pensia vs Malach width factor, error and accuracy; SubsetSum error vs n
planted                Plant 'n' Seek: known sparse targets hidden in random nets; every method
construct-vs-learn     constructed ticket vs learned supermask vs dense training, same target
pensia-exp2            RedLayer structure (r copies) vs a parameter-matched wide net, edge-popup
=====================  ==========================================================================
"""
