"""digitcmp: does weight sharing and an auxiliary loss help compare two MNIST digits?"""

__version__ = "0.1.0"
