# An HNSW flow as in FAISS's wiki: build, tune efSearch, search, compare
# with exact search. The graph is built with high efConstruction so that
# the printed results do not depend on the (parallel) construction order.
import numpy as np
import faiss

d, nb, nq, k = 32, 5000, 200, 5
rs = np.random.RandomState(42)
xb = rs.rand(nb, d).astype('float32')
xq = rs.rand(nq, d).astype('float32')

index = faiss.IndexHNSWFlat(d, 32)
index.hnsw.efConstruction = 200
print(index.hnsw.efConstruction, index.hnsw.efSearch, index.is_trained)
index.add(xb)
print(index.ntotal)

exact = faiss.IndexFlatL2(d)
exact.add(xb)
_, gt = exact.search(xq, k)

index.hnsw.efSearch = 256
D, I = index.search(xq, k)
print(index.hnsw.efSearch)
print(I[:5])
print("recall@%d: %.3f" % (k, (I == gt).mean()))
print(np.round(D[:3], 4))
