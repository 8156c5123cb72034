#!/usr/bin/env node
// Entry point of the `render-farm` command: runs the compiled CLI.
require('../dist/src/cli.js').main(process.argv);
