app = 42
