// A stand-in (see ../README.md): the same names as the other stand-in; any use throws.
export * from "../node-datachannel/index.js"
