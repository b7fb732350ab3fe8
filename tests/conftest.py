import os
import sys

# Tests run on the CPU; keep XLA from grabbing all cores' worth of threads per test process.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
