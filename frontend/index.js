export function render() { document.body.textContent = "convviz"; }
