# k-means as in FAISS's wiki: train, centroids, objective, assignment.
import numpy as np
import faiss

d, n, ncentroids, niter = 16, 5000, 32, 20
rs = np.random.RandomState(3)
x = rs.rand(n, d).astype('float32')

kmeans = faiss.Kmeans(d, ncentroids, niter=niter, verbose=False, seed=99)
obj = kmeans.train(x)
print(kmeans.centroids.shape, kmeans.centroids.dtype)
print("%.5g %d" % (obj, len(kmeans.obj)))
print(np.round(kmeans.centroids[:3, :4], 4))
D, I = kmeans.index.search(x[:8], 1)
print(I.ravel())
D, I = kmeans.assign(x[-8:])
print(I, np.round(D, 3))
