import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// `base: "./"`: the built page works from any path of any static host (and from the dev server's `/`).
export default defineConfig({
  base: "./",
  plugins: [react()],
  build: { outDir: "dist", emptyOutDir: true, chunkSizeWarningLimit: 1500 },
  server: { host: "127.0.0.1", port: 5173 },
});
