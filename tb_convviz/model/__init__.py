"""How the package touches a torch model: hooks, layer choice, untouched state, fx traces, notices."""
