"""Settings for every host. Each one is documented in the README's settings table.

Examples (uncomment to use):
"""

# model_quant = "Q4_K_M"
# server_port = 8080
# apt_proxy = "http://apt-cache.internal:3142"
