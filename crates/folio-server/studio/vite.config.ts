// The Studio is served by `folio serve` under /studio, from files embedded
// in the binary (crates/folio-server/src/studio.rs). Their names are fixed
// (no content hashes) so that the Rust side can name each one; the server
// answers them with an ETag and `Cache-Control: no-cache` instead.
import { defineConfig } from "vite";

export default defineConfig({
  base: "/studio/",
  // `npm run dev`: the page from Vite, the API from a running `folio serve`.
  server: {
    proxy: { "/db": process.env.FOLIO_URL ?? "http://127.0.0.1:7070" },
  },
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    modulePreload: { polyfill: false },
    rollupOptions: {
      output: {
        entryFileNames: "assets/studio.js",
        chunkFileNames: "assets/[name].js",
        assetFileNames: "assets/studio[extname]",
      },
    },
  },
});
